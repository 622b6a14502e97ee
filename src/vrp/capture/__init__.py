"""The instrumented pass: attention over image patches, residuals, output distributions."""
