// Package ejbca is a stand-in for the EJBCA REST client that SPIRE's EJBCA
// UpstreamAuthority plugin imports. It exposes only the identifiers that
// plugin uses, and every operation fails, because the real SDK cannot be
// fetched from the module proxy and sigil's interop tests never use EJBCA.
package ejbca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
)

// ErrUnavailable is returned by every operation of this stub.
var ErrUnavailable = errors.New("EJBCA support is not available in this build (stub used for sigil interop tests)")

// Authenticator supplies the HTTP client used to reach EJBCA.
type Authenticator interface {
	GetHTTPClient() (*http.Client, error)
}

// MTLSAuthenticatorBuilder collects mTLS material; Build always fails.
type MTLSAuthenticatorBuilder struct{}

// NewMTLSAuthenticatorBuilder returns an empty builder.
func NewMTLSAuthenticatorBuilder() *MTLSAuthenticatorBuilder { return &MTLSAuthenticatorBuilder{} }

// WithClientCertificate ignores the certificate.
func (b *MTLSAuthenticatorBuilder) WithClientCertificate(*tls.Certificate) *MTLSAuthenticatorBuilder {
	return b
}

// WithCaCertificates ignores the CA certificates.
func (b *MTLSAuthenticatorBuilder) WithCaCertificates([]*x509.Certificate) *MTLSAuthenticatorBuilder {
	return b
}

// Build fails with ErrUnavailable.
func (b *MTLSAuthenticatorBuilder) Build() (Authenticator, error) { return nil, ErrUnavailable }

// Configuration holds the EJBCA host and authenticator.
type Configuration struct {
	Host          string
	authenticator Authenticator
}

// NewConfiguration returns an empty configuration.
func NewConfiguration() *Configuration { return &Configuration{} }

// SetAuthenticator records the authenticator.
func (c *Configuration) SetAuthenticator(a Authenticator) { c.authenticator = a }

// APIClient groups the EJBCA API services.
type APIClient struct {
	V1CertificateApi *V1CertificateApiService
}

// NewAPIClient fails with ErrUnavailable.
func NewAPIClient(*Configuration) (*APIClient, error) { return nil, ErrUnavailable }

// V1CertificateApiService is the certificate enrollment service.
type V1CertificateApiService struct{}

// EnrollPkcs10Certificate starts an enrollment request.
func (s *V1CertificateApiService) EnrollPkcs10Certificate(ctx context.Context) ApiEnrollPkcs10CertificateRequest {
	return ApiEnrollPkcs10CertificateRequest{ctx: ctx}
}

// ApiEnrollPkcs10CertificateRequest is a pending enrollment request.
type ApiEnrollPkcs10CertificateRequest struct {
	ctx  context.Context
	body *EnrollCertificateRestRequest
}

// EnrollCertificateRestRequest sets the request body.
func (r ApiEnrollPkcs10CertificateRequest) EnrollCertificateRestRequest(body EnrollCertificateRestRequest) ApiEnrollPkcs10CertificateRequest {
	r.body = &body
	return r
}

// Execute fails with ErrUnavailable.
func (r ApiEnrollPkcs10CertificateRequest) Execute() (*CertificateRestResponse, *http.Response, error) {
	return nil, nil, ErrUnavailable
}

// EnrollCertificateRestRequest is the body of a PKCS#10 enrollment.
type EnrollCertificateRestRequest struct {
	CertificateRequest       *string
	CertificateProfileName   *string
	EndEntityProfileName     *string
	CertificateAuthorityName *string
	Username                 *string
	Password                 *string
	AccountBindingId         *string
	IncludeChain             *bool
}

// NewEnrollCertificateRestRequest returns an empty request body.
func NewEnrollCertificateRestRequest() *EnrollCertificateRestRequest {
	return &EnrollCertificateRestRequest{}
}

// SetCertificateRequest sets the PEM CSR.
func (o *EnrollCertificateRestRequest) SetCertificateRequest(v string) { o.CertificateRequest = &v }

// SetCertificateProfileName sets the certificate profile.
func (o *EnrollCertificateRestRequest) SetCertificateProfileName(v string) {
	o.CertificateProfileName = &v
}

// SetEndEntityProfileName sets the end entity profile.
func (o *EnrollCertificateRestRequest) SetEndEntityProfileName(v string) { o.EndEntityProfileName = &v }

// SetCertificateAuthorityName sets the issuing CA.
func (o *EnrollCertificateRestRequest) SetCertificateAuthorityName(v string) {
	o.CertificateAuthorityName = &v
}

// SetUsername sets the end entity name.
func (o *EnrollCertificateRestRequest) SetUsername(v string) { o.Username = &v }

// SetPassword sets the end entity password.
func (o *EnrollCertificateRestRequest) SetPassword(v string) { o.Password = &v }

// SetAccountBindingId sets the account binding id.
func (o *EnrollCertificateRestRequest) SetAccountBindingId(v string) { o.AccountBindingId = &v }

// SetIncludeChain asks for the CA chain in the response.
func (o *EnrollCertificateRestRequest) SetIncludeChain(v bool) { o.IncludeChain = &v }

// CertificateRestResponse is an enrollment result.
type CertificateRestResponse struct {
	Certificate      *string
	ResponseFormat   *string
	CertificateChain []string
}

// GetCertificate returns the certificate, or "" when unset.
func (o *CertificateRestResponse) GetCertificate() string {
	if o == nil || o.Certificate == nil {
		return ""
	}
	return *o.Certificate
}

// GetResponseFormat returns the response format, or "" when unset.
func (o *CertificateRestResponse) GetResponseFormat() string {
	if o == nil || o.ResponseFormat == nil {
		return ""
	}
	return *o.ResponseFormat
}

// GenericOpenAPIError is an error carrying the raw response body.
type GenericOpenAPIError struct {
	body  []byte
	error string
}

// Error returns the error message.
func (e GenericOpenAPIError) Error() string { return e.error }

// Body returns the raw response body.
func (e GenericOpenAPIError) Body() []byte { return e.body }
