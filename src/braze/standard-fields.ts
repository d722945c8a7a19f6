/**
 * Braze's standard profile fields (lower case, case-sensitive): a column named like one writes
 * that field, not a custom attribute. They are never unset by an audience exit: an email or a
 * first name is the person's, not the audience's. (../shared/BRAZE.md; Braze's user attributes
 * object page, `_docs/_api/objects_filters/user_attributes_object.md`, lists them.)
 */
export const STANDARD_FIELDS: ReadonlySet<string> = new Set([
  'first_name',
  'last_name',
  'email',
  'phone',
  'dob',
  'gender',
  'country',
  'home_city',
  'language',
  'time_zone',
  'email_subscribe',
  'push_subscribe',
  'subscription_groups',
  'date_of_first_session',
  'date_of_last_session',
  'facebook',
  'twitter',
  'image_url',
  'marked_email_as_spam_at',
  'current_location',
  'email_open_tracking_disabled',
  'email_click_tracking_disabled',
  'push_tokens',
]);
