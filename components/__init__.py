"""KFP components: thin wrappers, each a few lines over one library call.

``stage_data`` -> ``train`` -> ``evaluate`` (one benchmark per task) -> ``check_gate`` ->
``register``, and ``close_runs`` as the pipeline's exit handler. Every component runs in
the one project image (``pipelines.platform.component_image()``), which has kfp and this
project installed, so nothing is pip-installed when a task starts; the bodies import
the library inside the function because KFP ships only the function's source.
"""
