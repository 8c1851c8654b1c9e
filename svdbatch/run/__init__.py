"""The rules of a running job, free of Ray: what the cluster can run (capacity), the watchdog, graceful stopping, the
generation workers' registry, the terminal filter, live metrics and the run record. ray/ feeds them facts. Imports
store/, render/, items/, model/, estimate/, spec/ and the foundation."""
