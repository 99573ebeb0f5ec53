"""Consent (issue #12): the policy, the append-only ledger and the one check.

:mod:`features.consent.policy` reads the policy file (purposes, ``policy_version``, the regime of
each country); :mod:`features.consent.ledger` stores every choice a person makes;
:mod:`features.consent.check` is the one place a consent decision is made.
"""
