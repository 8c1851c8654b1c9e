"""The render stages as plain callables over pyarrow tables, testable without Ray: images in, the generation call,
MP4 encoding, quality signals and gates, WebDataset shards, and which generation faults heal. Imports items/, model/,
estimate/, spec/ and the foundation."""
