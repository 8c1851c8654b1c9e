"""``svdbatch report``: the static HTML page of an output (totals, runs, charts, gallery) and its charts. Imports
run/, store/, render/, items/, spec/ and the foundation; nothing here imports Ray or torch."""
