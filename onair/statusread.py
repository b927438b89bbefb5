"""How the operator reads an encoder's GET /status: the contract between the encoder's status server
and the operator's reader.

A read with `?wait=<seconds>&seen=<headline>` is held by the encoder until its headline (what the
operator acts on at once: the state, the publisher's connection, pause, a full spool, which outputs
exist) differs from `seen`, or until `wait` has passed; every answer carries the current headline in
HEADLINE_HEADER. So a running encoder is read about once a status progress interval, and a state
change reaches the operator as soon as it happens. An encoder without the header (an older image)
answers at once, and is read every poll interval instead.

The headline (onair.encoder.status.EncoderStatus.headline_parts) only decides when a read returns;
which status changes the operator writes at once is still its own decision (reconcile.progress_only)."""

HEADLINE_HEADER = "Onair-Status-Headline"
MAX_WAIT_SECONDS = 60.0
