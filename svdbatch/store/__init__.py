"""What a job keeps in its output: the commit record (what is done, what a rerun skips, the metadata table) and the
lease that lets one run at a time write there. Imports render/, items/, model/, estimate/, spec/ and the
foundation."""
