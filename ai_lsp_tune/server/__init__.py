"""The language server: pygls features, workspace commands, the state it owns."""
