"""The encoder's exit codes and last words: the contract between the encoder and the operator, which
reads them from the Pod's terminated container state."""

EXIT_OK = 0  # done: stopped, or a recording or clip finished
EXIT_TRANSIENT = 1  # a crash or a busy port: worth another attempt
EXIT_BAD_CONFIG = 2  # the job can never run as specified: the job fails, no retry
EXIT_INTERRUPTED = 3  # a recording stopped before its end (eviction, node drain): another attempt continues it

# The termination message of an encoder that wrote its end (EXT-X-ENDLIST, a recording's files): not
# merely stopped, and not stopped before it could read what earlier Pods stored.
FINISHED_MESSAGE = "finished"
