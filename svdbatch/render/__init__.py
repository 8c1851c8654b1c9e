"""The render stages as plain callables over pyarrow tables, testable without Ray: the feed's (manifest rows ->
items, the resume decision, the plan's tallies, the prune), then the generation actor's: images in, the generation
call, MP4 encoding, quality signals and gates, WebDataset shards, and which generation faults heal. Imports items/,
model/, estimate/, spec/ and the foundation."""
