"""Models: resolving a name the user gave (hub name, folder, GGUF) and loading it, once."""
