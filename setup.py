"""The one thing pyproject.toml cannot say: chatdoc._yread, the C fast path of chatdoc.causal's reader of Yjs
updates (README: Dependencies and why). Optional: without a C compiler the install still succeeds and the
pure-Python reader (the reference) does the work; tests/test_causal_native.py fails then unless
CHATDOC_PURE_PYTHON=1 says that is intended."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("chatdoc._yread", ["chatdoc/_yread.c"], optional=True)])
