"""The Fashion-MNIST mask study as a small package: data, training, measurement, rules, report, runner.

``run.py`` beside this folder is the one command; ``regime.py`` measures the
learning curve that chose the study's training length; ``report.py`` redraws
a report from ``results.json`` alone.
"""
