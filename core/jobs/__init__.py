"""Every computation as a job on Ray: connection (cluster), the job table (manager), what a
job does in a worker (tasks), and the client functions pages and the CLI call (client)."""
