-- Standard profile fields (written as Braze's own fields, not custom attributes).
-- @identifier external_id
-- @on_exit keep
SELECT c.customer_id AS external_id,
       c.first_name,
       c.email,
       c.birth_date AS dob
FROM customers c
