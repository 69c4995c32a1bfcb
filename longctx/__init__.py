"""Long-context tests at exact token lengths: generators, exporters, a runner for served models, scoring."""
