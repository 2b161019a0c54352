"""Traces -> training set.

Read in chunks by worker processes (``pool``, ``chunks``), cleaned (``clean``, with ``redact``
and ``crop``), written (``prepare``; in the server, by the ``worker`` process), read back by
training (``reader``).
"""
