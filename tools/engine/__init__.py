"""The training engine: plain values in (models, records, configs), no options and no Run."""
