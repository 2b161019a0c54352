"""Traces -> training set.

Read in chunks by worker processes (``pool``, ``chunks``), cleaned (``redact``, ``crop``),
written (``prepare``; in the server, by the ``worker`` process), read back by training
(``reader``).
"""
