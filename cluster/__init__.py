"""How the system is started: settings, the `trader` command line, local cluster, job submission."""
