"""gramcast.training: datasets, losses, training stages and their configs.

Imports only torch and numpy so that it runs on a bare GPU machine.
"""
