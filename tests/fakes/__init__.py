"""Local HTTP fakes of cloud APIs for tests (127.0.0.1 only), driven through the real SDK clients."""
