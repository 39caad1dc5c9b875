"""The ``dogbreed`` command's verbs, a module a group: ``local`` (this machine), ``aws`` (SageMaker), ``reports``
(Debugger and Profiler reports). ``dogbreed.cli`` assembles their parsers; nothing else imports them."""
