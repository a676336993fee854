"""stvsr: space-time video super-resolution (Zooming Slow-Mo, STDAN, SAFA, MSITF, STARnet).

Importing the package has no side effects: nothing is registered by scanning folders, nothing is
compiled and no device is touched until it is used.
"""

__version__ = "0.1.0"
