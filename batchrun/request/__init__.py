"""Row + job spec → the request body: building the chat-completions JSON (``body``) and
streaming a body whose local media are read and base64-encoded while it is sent
(``payload``). It builds and returns what it built; pricing a request is ``cost``'s job. May
import ``core``, ``media``, ``cost`` and ``manifest`` (it does not use ``cost``)."""
