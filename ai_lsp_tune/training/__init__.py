"""LoRA fine-tuning with mlx-lm in a worker process, driven by typed events.

``request`` says what to train, ``events`` is what the worker reports, ``runner`` spawns the
worker and reads its events (no MLX import in the parent), ``worker`` does the work.
"""
