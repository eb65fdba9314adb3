"""The minclip course: graded exercises that rebuild CLIP's pieces, and the grader that checks them against minclip.

``python -m course list`` shows the exercises; ``python -m course check NAME`` grades ``course/exercises/NAME.py``.
The syllabus, and how an instructor runs the course, are in course/README.md.
"""
