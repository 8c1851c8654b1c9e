"""Items and the manifest: manifest rows -> items (variants, seeds, output keys, fingerprints), whether an item
renders again (the resume decision), the manifest's files and schema, ``svdbatch manifest`` (scan), and the columns
and metadata table every stage passes along. Pure functions over pyarrow, no torch. Imports spec/ and the
foundation."""
