"""Names shared by whoever puts messages on the task queue and whoever consumes them."""

# The Redis key prefix of the task broker: the workers' broker and the crash publisher's
# pipelined writes must agree on it.
NAMESPACE = "symbolon-tasks"
