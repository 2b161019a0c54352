"""LoRA fine-tuning with mlx-lm in a worker process, driven by typed events.

``protocol`` holds the messages (the request that says what to train, the events the worker
reports), ``runner`` spawns the worker and reads its events (no MLX import in the parent),
``worker`` does the work, ``readout`` says a step as a person reads it.
"""
