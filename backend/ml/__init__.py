"""Media-bias classification experiment pipeline."""
