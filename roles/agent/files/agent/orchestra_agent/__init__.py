"""orchestra-agent: the thin worker agent of the orchestra.fleet collection."""

__version__ = '0.1.0'
