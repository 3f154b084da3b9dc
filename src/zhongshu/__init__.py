"""zhongshu (中枢): a self-hosted hub for fleets of worker nodes."""

__version__ = "0.1.0"
