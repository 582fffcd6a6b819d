-- The Prefect server keeps its own database next to pds's.
CREATE DATABASE prefect OWNER pds;
