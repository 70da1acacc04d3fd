from dsm.models import dsm_net  # noqa: F401  (registers the model)
