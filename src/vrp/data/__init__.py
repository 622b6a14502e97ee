"""The data layer: item schema, loaders, scorers."""
