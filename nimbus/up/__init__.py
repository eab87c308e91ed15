"""`nimbus up`: the whole system on one machine, each service its own child process.

`config` holds the flags, `stack` turns them into the processes to run (in dependency order)
and the replication peers to create, `preflight` checks ports and binaries before anything
starts, `readiness` tells when a process serves, `supervisor` runs and stops the children,
`peers` sets up replication through the Replication API, `report` prints, and `launcher` ties
one run together.
"""
