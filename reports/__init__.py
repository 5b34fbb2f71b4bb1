"""Report builders: run records and tracking data -> Markdown tables."""
