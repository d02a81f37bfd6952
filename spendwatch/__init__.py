"""spendwatch: cloud spend and GPU-abuse detection that runs in your own account."""

__version__ = "0.1.0"
