"""packer's version, in a module that imports nothing (the command line's ``--version`` reads it)."""

__version__ = "0.1.0"
