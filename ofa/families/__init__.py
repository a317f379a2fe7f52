"""Network families: each folder holds everything that knows one network structure (see :mod:`ofa.family`)."""
