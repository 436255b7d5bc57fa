"""The interactive app (``cxrgan app``): generate, steer and decompose radiographs in the browser.

:mod:`cxrgan.app.workspace` holds what the app does (plain Python over the library); :mod:`cxrgan.app.page` lays it
out as a local Gradio page and serves it.
"""
