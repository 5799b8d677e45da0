"""The applications, on top of the library: what users run rather than import.

    figures/          every figure of the lecture + index.html (recipes, runner, command line, captions)
    figures_robust    the standard model beside its adversarially trained twin (one figure)
    figures_resnet    the embedded AlexNet beside the scene ResNet (one figure)
    gallery           a folder of figures with its index.html, written safely
    explorer          the local web page (explorer_static/ is its front end)
    draw              how maps, images and tables are drawn (PIL and OpenCV)
    walkthrough       backprop to the input on a tiny network, layer by layer (teaching)
    cli/              the command line ``tinygrad-explain COMMAND`` (``python -m tinygrad_explain``)

Imports go down only: ``apps`` uses ``explain`` and the layers below it; nothing
below imports ``apps``.  The old flat names (``tinygrad_explain.figures``,
``.explorer``, ``.draw``, ...) still import, for one release, through the package's one
alias table, :data:`tinygrad_explain._aliases.ALIASES`.
"""
