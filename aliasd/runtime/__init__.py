"""The running shell around the engine, one part per concern, each built whole
by the composition root (``aliasd.root``): the inbox sources write into, the
committer that turns it into served snapshots and runs the effects, the state
writer, the relist checker, process tuning and the lame duck."""
