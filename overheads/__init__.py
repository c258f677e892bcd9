"""Each policy's own work at real size against one real-size transformer block (`dropedit bench --overheads`,
docs/overheads): the measurement (`measure`) and the table of how often each part runs in an edit (`table`)."""
