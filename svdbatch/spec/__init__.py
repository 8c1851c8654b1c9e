"""The job spec: the pydantic model tree a YAML job file is validated into, its loading (local file or URL),
``--set`` overrides and the generated reference. Everything else reads a validated ``JobSpec``. Imports only the
foundation (``svdbatch.errors``, ``svdbatch.storage``)."""
