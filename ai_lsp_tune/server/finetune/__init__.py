"""The server's fine-tune job: prepare, train, evaluate and swap, with progress and commands."""
