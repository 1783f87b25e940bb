-- The CA (PEM) that verifies a registered server reached with sslmode=verify-full. Public, so
-- not sealed like the admin URL.
ALTER TABLE db_servers ADD COLUMN tls_ca_pem text;
