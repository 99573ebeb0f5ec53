"""The identity module: every id Tailor stores or serves flows through here (issue #11).

:mod:`features.identity.keys` turns raw ids into person keys; :mod:`features.identity.graph`
stitches the person keys of one person (anonymous devices, a user id) into one canonical key.
"""
