"""The tool workbench: drafts of tool definitions (:mod:`northstar.workbench.drafts`) and, built on
them, validation and publishing. Importing this package imports nothing else, so the layers that
need only drafts stay light."""
