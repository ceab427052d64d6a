"""SAE Circuits: the shared library behind every chapter.

One module per concern: ``backends`` (what a chapter runs on), ``toy`` (the model organism),
``checking`` (comparisons with known outputs), ``grading`` (nbval scoring), ``build`` (one
source per chapter -> notebooks and modules).
"""
