"""A person's data across every store: erasure with a signed receipt, and export (issue #13).

:mod:`features.privacy.person` resolves a person to every linked id and states the contract each
store's adapter keeps (:class:`~features.privacy.person.PersonStore`);
:mod:`features.privacy.stores` holds the adapters and the registry of a workspace's stores;
:mod:`features.privacy.receipts` the keyed pseudonym and the Ed25519 receipt;
:mod:`features.privacy.erasure` erasure (journalled, idempotent) and export.
"""
