"""The version of forrestq, in a module of its own so that every layer (the command line's
``--version``) can read it without importing the package root."""

__version__ = "0.1.0"
