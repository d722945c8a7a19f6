-- Demo data for `npm start`: a small customer table in the embedded database.
DROP TABLE IF EXISTS customers;
CREATE TABLE customers (
  customer_id     integer PRIMARY KEY,
  email           text,
  first_name      text,
  birth_date      date,
  lifetime_value  numeric(12, 2),
  tier            text,
  is_vip          boolean NOT NULL DEFAULT false,
  orders_count    integer,
  last_order_at   timestamptz,
  categories      text[],
  preferences     jsonb
);
INSERT INTO customers
SELECT i,
       'customer' || i || '@example.com',
       (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken'])[1 + i % 8],
       date '1970-01-01' + (i * 97 % 15000),
       round((i * 37.13) % 5000, 2),
       (ARRAY['bronze', 'silver', 'gold', 'platinum'])[1 + i % 4],
       i % 3 = 0,
       i % 17,
       timestamptz '2026-01-01 00:00:00+00' + make_interval(hours => i * 31 % 7000),
       (ARRAY[ARRAY['shoes', 'bags'], ARRAY['books', 'music'], ARRAY['garden', 'tools'], ARRAY['toys', 'games']])[1 + i % 4 : 1 + i % 4][1:2] ,
       jsonb_build_object('channel', CASE WHEN i % 2 = 0 THEN 'email' ELSE 'push' END, 'frequency', 1 + i % 3)
FROM generate_series(1, 300) AS i;
-- A 2-D slice above keeps the demo short; flatten it to text[].
UPDATE customers SET categories = ARRAY(SELECT unnest(categories));
