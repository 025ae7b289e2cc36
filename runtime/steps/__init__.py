"""The start-up steps, one module each, run in file-name order by runtime/startup.py."""
