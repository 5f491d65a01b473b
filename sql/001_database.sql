-- All platform tables live in one database.
CREATE DATABASE IF NOT EXISTS marketdata;
